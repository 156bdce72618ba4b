"""Encode a clip's frames (JPEG bytes with capture times) into an MP4 that browsers play: H.264, yuv420p,
faststart (the index first, so playback starts before the download ends), variable frame rate on capture time.

Our sources decode with OpenCV, so the daemon has decoded frames and not the camera's packets: clips are
re-encoded (PyAV's libx264), never remuxed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipelines.models import Image

_TIME_BASE = Fraction(1, 1000)  # pts in milliseconds of capture time: frames keep their real spacing


class DiskFullError(OSError):
    """The clip could not be written: no space left (or the quota says so)."""


@dataclass(frozen=True)
class Shot:
    """One buffered frame: capture time (epoch seconds) and its JPEG bytes."""

    t: float
    jpeg: bytes


@dataclass(frozen=True)
class EncodeOptions:
    fps: float = 10.0  # the nominal rate written in the stream header; pts carry the real times
    crf: int = 28
    preset: str = "ultrafast"
    max_bytes: int = 50 * 1024 * 1024  # one clip larger than this is cut short


def encode_clip(shots: Sequence[Shot], path: Path, options: EncodeOptions) -> int:
    """Write `shots` to `path` atomically (a temporary file renamed into place); returns the clip's size.

    Raises DiskFullError when the disk is full, ValueError for no frames or frames that are not JPEG.
    """
    if not shots:
        raise ValueError(f"clip {path}: no frames to encode")
    first = _decode(shots[0])
    height, width = (first.shape[0] // 2) * 2, (first.shape[1] // 2) * 2  # yuv420p needs even sides
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(shots, first, tmp, width, height, options)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"clip {path}: {exc.strerror}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _write(shots: Sequence[Shot], first: Image, tmp: Path, width: int, height: int, options: EncodeOptions) -> None:
    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(options.fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = _TIME_BASE
        stream.options = {"crf": str(options.crf), "preset": options.preset}
        t0, last_pts, written = shots[0].t, -1, 0
        for index, shot in enumerate(shots):
            image = first if index == 0 else _decode(shot)
            pts = max(last_pts + 1, round((shot.t - t0) * 1000))  # strictly increasing, as MP4 needs
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="bgr24")
            frame.pts, frame.time_base, last_pts = pts, _TIME_BASE, pts
            for packet in stream.encode(frame):
                container.mux(packet)
                written += packet.size
            if written > options.max_bytes:
                break  # a clip past its size bound ends here; what it has plays
        for packet in stream.encode(None):
            container.mux(packet)


def _decode(shot: Shot) -> Image:
    image = cv2.imdecode(np.frombuffer(shot.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"clip frame at {shot.t:.3f} is not a JPEG")
    return np.asarray(image, dtype=np.uint8)


def probe_seconds(path: Path) -> tuple[float, int]:
    """(duration in seconds, frame count) of a clip's video stream, as a player sees it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        if not frames:
            return 0.0, 0
        base = stream.time_base
        duration = stream.duration * base if stream.duration is not None and base is not None else 0
        return float(duration), len(frames)
