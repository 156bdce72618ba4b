"""The peer's licence-plate chain for `edgewatch bench capacity`: what a user writes in InferencePipeline's callback.

Vehicles (YOLOX-nano) on every frame, then for every vehicle crop the plate detector (plate_det_y5fu_640), then
for every plate the PP-OCR recogniser: one `session.run` per image and per crop, no tracking, no batching, no
skipping of plates already read. Written from cv2, numpy and ONNX Runtime alone (the formats in
../shared/MODELS.md), like reference.py, so that it runs in the peer's own venv and no project code is in
the denominator of a ratio.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

Frame = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]
VEHICLES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck: the example config's class_filter
OCR_HEIGHT, OCR_MAX_WIDTH = 48, 320


def session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def letterbox(image: Frame, side: int, pad: int, centre: bool) -> tuple[Floats, float, float, float]:
    """side x side canvas (float32 HWC, BGR), scale, and the x/y offset of the resized image in it."""
    scale = min(side / image.shape[1], side / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    dx, dy = ((side - w) // 2, (side - h) // 2) if centre else (0, 0)
    canvas = np.full((side, side, 3), pad, np.uint8)
    canvas[dy : dy + h, dx : dx + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return canvas.astype(np.float32), scale, float(dx), float(dy)


def nms(boxes: Floats, scores: Floats, iou: float) -> list[int]:
    """Indices kept by OpenCV's NMS over xyxy boxes."""
    if len(boxes) == 0:
        return []
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    return [int(i) for i in np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, iou)).reshape(-1)]


class Vehicles:
    """YOLOX-nano 416: top-left letterbox, grey 114, BGR 0..255; grid decode, obj x class, NMS 0.45."""

    def __init__(self, model: Path, threads: int, confidence: float = 0.3) -> None:
        self.session = session(model, threads)
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
        canvas, scale, _, _ = letterbox(image, self.side, 114, centre=False)
        out = self.session.run(None, {self.name: canvas.transpose(2, 0, 1)[None]})[0][0]
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
        self.session = session(model, threads)
        self.name = self.session.get_inputs()[0].name
        self.side = int(self.session.get_inputs()[0].shape[2])
        self.confidence = confidence

    def __call__(self, crop: Frame) -> list[Floats]:
        """The four corners (source pixels of `crop`) of each plate found."""
        canvas, scale, dx, dy = letterbox(crop, self.side, 0, centre=True)
        rgb = canvas[..., ::-1].transpose(2, 0, 1)[None] / 255.0
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
        self.session = session(model, threads)
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
