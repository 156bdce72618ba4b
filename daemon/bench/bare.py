"""Bare reference loops for `edgewatch bench`: ONNX Runtime and OpenCV only, no project code.

A ratio's denominator must not be the project's own code path, so these loops are written from the libraries
directly: frames decoded beforehand, resized and padded (letterbox, grey 114 as YOLOX trains with), then
`session.run` with ONNX Runtime's own defaults apart from the thread count. Nothing from daemon/ or pipelines/
is imported here.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


def decode(video: Path, limit: int | None = None) -> list[np.ndarray]:
    """The video's frames (BGR), at most `limit`."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise OSError(f"bench: no frames decoded from {video}")
    return frames


def session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """1x3xHxW float32: the image scaled to fit, top-left, padded with 114."""
    scale = min(height / image.shape[0], width / image.shape[1])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.full((height, width, 3), 114, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def detector_fps(model: Path, frames: list[np.ndarray], threads: int) -> float:
    """Frames per second of letterbox + session.run over `frames` (after one warm-up run)."""
    sess = session(model, threads)
    spec = sess.get_inputs()[0]
    height, width = int(spec.shape[2]), int(spec.shape[3])
    sess.run(None, {spec.name: letterbox(frames[0], height, width)})
    t0 = time.perf_counter()
    for image in frames:
        sess.run(None, {spec.name: letterbox(image, height, width)})
    return len(frames) / (time.perf_counter() - t0)
