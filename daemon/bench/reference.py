"""The bare reference loop every `edgewatch bench` ratio is also given against: cv2, numpy and ONNX Runtime only.

A ratio whose denominator is the project's own `detect()` hides the project's own overhead, so this loop is
written from the libraries alone: frames decoded beforehand, resize + pad (letterbox to the top-left corner,
grey 114, as YOLOX trains), BGR 0..255 as float32 NCHW, then `session.run` and nothing else. It imports
nothing from daemon/ or pipelines/, so that `edgewatch bench peer` can also load it, as a plain file, in the
peer's own virtual environment (which has no edgewatch installed).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

PAD = 114  # YOLOX's letterbox grey
Tensor = npt.NDArray[np.float32]
Frame = npt.NDArray[np.uint8]


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


def letterbox(image: Frame, width: int, height: int) -> Tensor:
    """1x3xHxW float32: the image scaled to fit (aspect kept, bilinear), top-left, padded with 114."""
    ratio = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio))
    canvas = np.full((height, width, 3), PAD, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
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
