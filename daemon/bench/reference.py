"""The bare reference loop every `edgewatch bench` ratio is also given against: cv2, numpy and ONNX Runtime only.

A ratio whose denominator is the project's own `detect()` hides the project's own overhead, so this loop is
written from the libraries alone: frames decoded beforehand, resize + pad (letterbox to the top-left corner,
grey 114, as YOLOX trains), BGR 0..255 as float32 NCHW, then `session.run` and nothing else. It imports
nothing from daemon/ or pipelines/, so that `edgewatch bench peer` and `bench capacity` can also load it, as
a plain file, in the peer's own virtual environment (which has no edgewatch installed), together with the
naive plate chain the peer's callback runs (`NaiveLpr`, below).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

PAD = 114  # YOLOX's letterbox grey
Tensor = npt.NDArray[np.float32]
Frame = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]
VEHICLES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck: the example config's class_filter
OCR_HEIGHT, OCR_MAX_WIDTH = 48, 320


def decode(video: Path, limit: int | None = None) -> list[Frame]:
    """All frames of `video` (BGR, at most `limit`); an error names the file when none decode."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    frames: list[Frame] = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(np.asarray(image, dtype=np.uint8))
    cap.release()
    if not frames:
        raise OSError(f"reference loop: no frames decoded from {video} (expected a video OpenCV can read)")
    return frames


def session(model: Path, threads: int, spin: bool) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads; `spin` False turns ORT's idle spin-wait off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def input_wh(sess: ort.InferenceSession) -> tuple[int, int]:
    """(width, height) of the model's fixed NCHW input; an error when it is dynamic."""
    shape = sess.get_inputs()[0].shape
    if not (isinstance(shape[2], int) and isinstance(shape[3], int)):
        raise ValueError(f"reference loop: the model's input {shape} is not a fixed NCHW size")
    return int(shape[3]), int(shape[2])


def placement(image: Frame, width: int, height: int, centre: bool = False) -> tuple[float, int, int, int, int]:
    """(scale, resized width, resized height, x offset, y offset) of the image fitted into width x height."""
    ratio = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio))
    dx, dy = ((width - new_w) // 2, (height - new_h) // 2) if centre else (0, 0)
    return ratio, new_w, new_h, dx, dy


def letterbox(image: Frame, width: int, height: int, pad: int = PAD, centre: bool = False) -> Tensor:
    """1x3xHxW float32 BGR 0..255: the image scaled to fit (aspect kept, bilinear), top-left (YOLOX) or centred,
    padded with `pad`."""
    _, new_w, new_h, dx, dy = placement(image, width, height, centre)
    canvas = np.full((height, width, 3), pad, np.uint8)
    canvas[dy : dy + new_h, dx : dx + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


class Reference:
    """One bare session and the call the loop (and the peer's callback) makes per frame."""

    def __init__(self, model: Path, threads: int, spin: bool) -> None:
        self.session = session(model, threads, spin)
        self.name = self.session.get_inputs()[0].name
        self.width, self.height = input_wh(self.session)

    def infer(self, image: Frame) -> list[npt.NDArray[np.float32]]:
        """Letterbox + `session.run`: the raw outputs, nothing decoded."""
        outputs = self.session.run(None, {self.name: letterbox(image, self.width, self.height)})
        return [np.asarray(o, np.float32) for o in outputs]


def loop(model: Path, frames: list[Frame], loops: int, threads: int, spin: bool) -> tuple[int, float]:
    """(frames run, seconds) of the bare loop over `frames` played `loops` times, after one warm-up run."""
    ref = Reference(model, threads, spin)
    ref.infer(frames[0])
    t0 = time.perf_counter()
    for _ in range(loops):
        for image in frames:
            ref.infer(image)
    return len(frames) * loops, time.perf_counter() - t0


# The naive plate chain the peer's callback runs in `bench capacity` (what a user writes in InferencePipeline's
# callback): vehicles (YOLOX-nano) on every frame, the plate detector (plate_det_y5fu_640) on every vehicle
# crop, the PP-OCR recogniser on every plate, one `session.run` each; no tracking, batching or skipping of
# plates already read. The formats are those of ../shared/MODELS.md.


def nms(boxes: Floats, scores: Floats, iou: float) -> list[int]:
    """Indices kept by OpenCV's NMS over xyxy boxes."""
    if len(boxes) == 0:
        return []
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    return [int(i) for i in np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, iou)).reshape(-1)]


class Vehicles:
    """YOLOX-nano 416: top-left letterbox, grey 114, BGR 0..255; grid decode, obj x class, NMS 0.45."""

    def __init__(self, model: Path, threads: int, confidence: float = 0.3) -> None:
        self.session = session(model, threads, spin=True)  # ORT's default, as a user's script has it
        self.name = self.session.get_inputs()[0].name
        self.side = int(self.session.get_inputs()[0].shape[2])
        self.confidence = confidence
        grids, strides = [], []
        for stride in (8, 16, 32):
            n = self.side // stride
            ys, xs = np.mgrid[0:n, 0:n]
            grids.append(np.column_stack([xs.ravel(), ys.ravel()]))
            strides.append(np.full(n * n, stride))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)[:, None]

    def __call__(self, image: Frame) -> Floats:
        """Vehicle boxes (xyxy, source pixels)."""
        scale = placement(image, self.side, self.side)[0]
        out = self.session.run(None, {self.name: letterbox(image, self.side, self.side)})[0][0]
        scores = out[:, 4:5] * out[:, 5:]
        class_id = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), class_id]
        keep = (best >= self.confidence) & np.isin(class_id, VEHICLES)
        xy = (out[keep, :2] + self.grid[keep]) * self.stride[keep]
        wh = np.exp(out[keep, 2:4]) * self.stride[keep]
        boxes = np.asarray(np.column_stack([xy - wh / 2, xy + wh / 2]) / scale, np.float32)
        return np.asarray(boxes[nms(boxes, best[keep], 0.45)], np.float32)


class Plates:
    """plate_det_y5fu_640: centred letterbox, black, RGB/255; x,y,w,h, obj, 4 corners, 2 classes; NMS 0.5."""

    def __init__(self, model: Path, threads: int, confidence: float = 0.4) -> None:
        self.session = session(model, threads, spin=True)  # ORT's default, as a user's script has it
        self.name = self.session.get_inputs()[0].name
        self.side = int(self.session.get_inputs()[0].shape[2])
        self.confidence = confidence

    def __call__(self, crop: Frame) -> list[Floats]:
        """The four corners (source pixels of `crop`) of each plate found."""
        scale, _, _, dx, dy = placement(crop, self.side, self.side, centre=True)
        rgb = letterbox(crop, self.side, self.side, pad=0, centre=True)[:, ::-1] / 255.0
        out = self.session.run(None, {self.name: np.ascontiguousarray(rgb, np.float32)})[0][0]
        score = out[:, 4] * out[:, 13:15].max(axis=1)
        rows = out[score >= self.confidence]
        score = score[score >= self.confidence]
        boxes = np.column_stack([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2])
        corners = (rows[:, 5:13].reshape(-1, 4, 2) - np.array([dx, dy], np.float32)) / scale
        return [corners[i] for i in nms(boxes, score, 0.5)]


class Reader:
    """PP-OCRv4 recogniser: rectified crop at height 48, (x/255 - 0.5)/0.5 BGR, greedy CTC."""

    def __init__(self, model: Path, threads: int) -> None:
        self.session = session(model, threads, spin=True)  # ORT's default, as a user's script has it
        self.name = self.session.get_inputs()[0].name
        table = self.session.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.table = ["blank", *table, " "]

    def __call__(self, image: Frame, corners: Floats) -> str:
        width = int(max(np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[2] - corners[3])))
        height = int(max(np.linalg.norm(corners[3] - corners[0]), np.linalg.norm(corners[2] - corners[1])))
        if width < 4 or height < 4:
            return ""
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        plate = cv2.warpPerspective(
            image, cv2.getPerspectiveTransform(corners.astype(np.float32), target), (width, height)
        )
        w = min(OCR_MAX_WIDTH, math.ceil(OCR_HEIGHT * width / height))
        line = cv2.resize(plate, (w, OCR_HEIGHT)).astype(np.float32) / 127.5 - 1.0
        probs = self.session.run(None, {self.name: line.transpose(2, 0, 1)[None]})[0][0]
        best = probs.argmax(axis=1)
        chars = [self.table[c] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
        return "".join(chars)


class NaiveLpr:
    """Vehicles -> plates per vehicle crop -> text per plate, one session.run each; returns the texts read."""

    def __init__(self, vehicles: Path, plates: Path, reader: Path, threads: int) -> None:
        self.vehicles = Vehicles(vehicles, threads)
        self.plates = Plates(plates, threads)
        self.reader = Reader(reader, threads)
        self.ms = {"vehicles": 0.0, "plates": 0.0, "reader": 0.0}  # wall ms spent in each, all frames

    def __call__(self, image: Frame) -> list[str]:
        texts = []
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        vehicles = self.vehicles(image).astype(int)
        t1 = time.perf_counter()
        self.ms["vehicles"] += (t1 - t0) * 1000
        for x1, y1, x2, y2 in vehicles:
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            crop = image[y1:y2, x1:x2]
            t1 = time.perf_counter()
            found = self.plates(crop)
            t2 = time.perf_counter()
            texts += [self.reader(crop, corners) for corners in found]
            self.ms["plates"] += (t2 - t1) * 1000
            self.ms["reader"] += (time.perf_counter() - t2) * 1000
        return texts
