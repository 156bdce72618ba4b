"""The live view: the latest Result per source, kept by reference, encoded as MJPEG only while someone watches.

The frame path calls LiveFeed.offer(result) once per result: one dict store, no copy, no encode. A viewer's
stream (GET /live/{source}.mjpg) wakes at most `live_fps` times a second, and only when a newer Result is
there does it draw and encode it, on Starlette's thread pool so the event loop keeps serving. Viewers are
bounded over all cameras (`max_viewers`); one more gets 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable

import cv2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from daemon.frames import Result
from daemon.service.uioptions import UiOptions
from daemon.web.server import error_response
from daemon.web.ui.annotate import draw

log = logging.getLogger(__name__)

BOUNDARY = "edgewatchframe"


class LiveFeed:
    """The latest Result of each source. offer() runs on the worker thread; readers only take references."""

    def __init__(self) -> None:
        self._latest: dict[str, Result] = {}

    def offer(self, result: Result) -> None:
        self._latest[result.frame.source_id] = result  # one reference store: atomic under the GIL

    def latest(self, source_id: str) -> Result | None:
        return self._latest.get(source_id)

    def sources(self) -> list[str]:
        return sorted(self._latest)


class NoLiveFeed(LiveFeed):
    """ui: off: nothing is kept, so the frame path pays one no-op call."""

    def offer(self, result: Result) -> None:
        return None


def live_feed(options: UiOptions) -> LiveFeed:
    return LiveFeed() if options.enabled else NoLiveFeed()


class Viewers:
    """Counts open live streams against a limit; `admit` is False when the limit is reached."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.served = 0  # frames sent over all streams (status page, tests)
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def encode(result: Result, options: UiOptions) -> bytes:
    """One annotated JPEG, at most live_max_width wide."""
    ok, data = cv2.imencode(
        ".jpg", draw(result, options.live_max_width), [cv2.IMWRITE_JPEG_QUALITY, options.live_quality]
    )
    if not ok:
        raise ValueError(f"live view of {result.frame.source_id}: OpenCV could not encode frame {result.frame.seq}")
    return data.tobytes()


OPENING = f"--{BOUNDARY}\r\n".encode()


def part(jpeg: bytes) -> bytes:
    """One frame and the boundary after it: a browser shows the frame at once instead of waiting for the next."""
    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode()


async def frames(
    feed: LiveFeed, source_id: str, options: UiOptions, viewers: Viewers, running: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """The MJPEG parts of one viewer's stream: a newer Result, at most live_fps a second; ends with the client
    or, after the latest frame, once `running()` is False (the source ended, failed or was stopped)."""
    interval = 1.0 / options.live_fps
    shown: Result | None = None
    try:
        yield OPENING
        while True:
            result = feed.latest(source_id)
            if result is not None and result is not shown:
                shown = result
                yield part(await run_in_threadpool(encode, result, options))
                viewers.served += 1
            if not running():  # after its last frame: a browser shows a part once the response or the next ends
                break
            await asyncio.sleep(interval)
    finally:
        viewers.leave()


def snapshot(feed: LiveFeed, source_id: str, options: UiOptions) -> Response:
    """GET /live/{source}.jpg: the latest annotated frame once (tile previews, tests); 404 before the first."""
    result = feed.latest(source_id)
    if result is None:
        return error_response(404, f"no frame from source {source_id!r} yet")
    return Response(encode(result, options), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def stream(
    request: Request,
    feed: LiveFeed,
    known: set[str],
    options: UiOptions,
    viewers: Viewers,
    running: Callable[[str], bool],
) -> Response:
    """GET /live/{source}.mjpg: multipart/x-mixed-replace; 404 for an unknown source, 503 over max_viewers."""
    source_id = request.path_params["source"]
    if source_id not in known:
        return error_response(404, f"no source {source_id!r}; sources: {', '.join(sorted(known)) or 'none'}")
    if not viewers.admit():
        log.warning("ui: live view of %s refused: %d viewers already (ui.max_viewers)", source_id, viewers.limit)
        return error_response(503, f"{viewers.limit} live viewers already (ui.max_viewers); try again later")
    return StreamingResponse(
        frames(feed, source_id, options, viewers, lambda: running(source_id)),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )
