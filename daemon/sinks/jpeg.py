"""Best-crop snapshot files for track events: their names and their atomic JPEG writing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


class SnapshotError(OSError):
    """A snapshot that cannot be encoded or written; the message names the file."""


def compact_utc(iso: str) -> str:
    """2026-11-22T10:02:13.417Z -> 20261122T100213.417Z (no ':' so the name is valid on every filesystem)."""
    return iso.replace("-", "").replace(":", "")


def snapshot_name(payload: Mapping[str, object]) -> str:
    """<source>_<UTC time>_<track id>_<event type>.jpg from an event payload (daemon/payload.py).

    The time is the event's `timestamp` (capture time of the frame during which it fired), so a consumer
    can find the file from the event alone.
    """
    when = compact_utc(str(payload["timestamp"]))
    return f"{payload['source_id']}_{when}_{payload['track_id']}_{payload['type']}.jpg"


def write_jpeg(path: Path, image: npt.NDArray[np.uint8], quality: int) -> Path:
    """Encode and write atomically (a reader never sees half a file); returns the path."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SnapshotError(f"cannot encode {path.name} as JPEG (image shape {image.shape}, dtype {image.dtype})")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror or exc}") from exc
    return path
