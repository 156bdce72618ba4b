"""RtspSource: an RTSP camera through OpenCV's FFmpeg backend, with timeouts and credentials kept out of logs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar, Literal
from urllib.parse import quote, urlsplit

import cv2
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from daemon.sources.base import Source, SourceError, SourceOptions, mask_credentials
from daemon.sources.cvcapture import CvCapture, DecodeOptions, open_params, report_decoder
from pipelines.preprocess import Image

log = logging.getLogger(__name__)

CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}
# OpenCV reads its FFmpeg options from a process-wide variable when a capture opens, and the sockets an
# open creates are found by comparing the process's sockets before and after it: one open at a time.
_OPEN_LOCK = threading.Lock()


class RtspOptions(DecodeOptions):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors must not echo the URL

    url: str = Field(
        ..., repr=False, description="rtsp:// or rtsps:// URL; it may carry user:password@, which is never logged."
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport: tcp (interleaved) or udp.")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up connecting after this many seconds.")
    read_timeout_s: float = Field(
        15.0, gt=0, le=300, description="FFmpeg's own limit on one blocked read, in seconds."
    )
    stall_timeout_s: float | None = Field(
        10.0, gt=0, description="Reconnect when no frame arrived for this many seconds; unset: never."
    )
    username: str | None = Field(
        None, repr=False, description="User name, when not given in the URL (e.g. from ${ENV} or a file)."
    )
    password: SecretStr | None = Field(None, description="Password, when not given in the URL; never logged.")

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, url: str) -> str:
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"expected a URL starting with rtsp:// or rtsps://, got scheme {scheme!r}")
        return url

    @model_validator(mode="after")
    def _check_credentials(self) -> RtspOptions:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.username is not None and "@" in urlsplit(self.url).netloc:
            raise ValueError("credentials are given both in the URL and as username/password; keep one")
        return self


class RtspSource(Source):
    """One RTSP stream. close() from another thread shuts the stream's sockets down so that a read
    blocked on a silent camera returns at once (Linux; elsewhere it returns at read_timeout_s)."""

    live: ClassVar[bool] = True
    Options: ClassVar[type[SourceOptions]] = RtspOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, RtspOptions)
        self.opts = options
        self._cv: CvCapture | None = None
        self._first = True  # the next read is a session's first frame
        self._lock = threading.Lock()

    @property
    def safe_url(self) -> str:
        return mask_credentials(self.opts.url)

    def stream_info(self) -> dict[str, str | float]:
        return self._cv.stream_info() if self._cv is not None else {}

    def describe(self) -> str:
        return f"rtsp:{self.options.id} {self.safe_url}"

    @property
    def stall_timeout_s(self) -> float | None:
        return self.opts.stall_timeout_s

    def connect_url(self) -> str:
        """The URL handed to FFmpeg: with username/password inserted, percent-encoded. Never log it."""
        if self.opts.username is None:
            return self.opts.url
        parts = urlsplit(self.opts.url)
        userinfo = quote(self.opts.username, safe="")
        if self.opts.password is not None:
            userinfo += ":" + quote(self.opts.password.get_secret_value(), safe="")
        return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()

    def open(self) -> None:
        parts = urlsplit(self.opts.url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        addresses = _addresses(host, port)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.opts.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.opts.read_timeout_s * 1000),
            *open_params(self.opts),
        ]
        with _OPEN_LOCK:
            before = _socket_fds()
            started = time.monotonic()
            with _capture_options(self.opts.transport):
                try:
                    cap = cv2.VideoCapture(self.connect_url(), cv2.CAP_FFMPEG, params)
                except cv2.error as exc:  # its text may quote the URL
                    raise SourceError(f"{self.describe()}: OpenCV failed: {mask_credentials(str(exc))}") from None
            ours = {fd: link for fd, link in _socket_fds().items()
                    if before.get(fd) != link and _peer_is(fd, addresses, port)}
            took = time.monotonic() - started
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: {self._open_failure(host, port, took)}")
        report_decoder(self.opts, cap)
        capture = CvCapture(cap, f"RTSP stream {self.safe_url}", lambda: _shutdown(ours))
        with self._lock:
            self._cv, self._first = capture, True
        log.info(
            "source %s: connected to %s over %s, %dx%d", self.options.id, self.safe_url, self.opts.transport,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def _open_failure(self, host: str, port: int, took: float) -> str:
        """Why the open failed, as far as we can tell: OpenCV only says it did not open. A failure well before
        open_timeout_s was an answer, not silence: a quick TCP connect tells a refused port from a server that
        answered but would not stream."""
        limit = self.opts.open_timeout_s
        if took >= limit * 0.9:
            return (f"cannot open the stream within {limit:g}s over {self.opts.transport} "
                    "(unreachable, or the camera did not answer)")
        try:
            with socket.create_connection((host, port), timeout=min(2.0, limit)):
                pass
        # host and port are not named: in a URL whose password has a raw "@" they may be a piece of it
        except ConnectionRefusedError:
            return f"connection refused after {took:.1f}s (nothing listens on that port)"
        except OSError as exc:
            return f"cannot connect after {took:.1f}s: {exc.strerror or exc}"
        return (f"the server answered but the stream did not open after {took:.1f}s over "
                f"{self.opts.transport} (unauthorized, unknown path or no video)")

    def read(self) -> tuple[Image, float | None] | None:
        capture = self._cv
        if capture is None:
            raise SourceError(f"{self.describe()}: read() before open()")
        image = capture.read()
        if image is None:
            raise SourceError(
                f"{self.describe()}: no frame within read_timeout_s={self.opts.read_timeout_s:g}s "
                "or the connection was lost"
            )
        msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        first, self._first = self._first, False
        # FFmpeg has no time for a session's first frame yet (OpenCV then says 0): unknown, not zero
        known = math.isfinite(msec) and msec >= 0 and not (first and msec == 0)
        return image, (msec / 1000.0 if known else None)

    def close(self) -> None:
        with self._lock:
            capture = self._cv
        if capture is not None:
            capture.close()


@contextlib.contextmanager
def _capture_options(transport: str) -> Iterator[None]:
    """Set rtsp_transport in OpenCV's FFmpeg options for one open, keeping any other options the user set."""
    previous = os.environ.get(CAPTURE_OPTIONS_ENV)
    pairs = [p for p in (previous or "").split("|") if p and not p.startswith("rtsp_transport;")]
    os.environ[CAPTURE_OPTIONS_ENV] = "|".join([f"rtsp_transport;{transport}", *pairs])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CAPTURE_OPTIONS_ENV, None)
        else:
            os.environ[CAPTURE_OPTIONS_ENV] = previous


def _addresses(host: str, port: int) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return set()  # FFmpeg will report the failure; the port alone then identifies our socket


def _socket_fds() -> dict[int, str]:
    """This process's sockets, fd -> "socket:[inode]"; empty where there is no /proc."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return {}
    found = {}
    for name in names:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:"):
                found[int(name)] = link
    return found


def _peer_is(fd: int, addresses: set[str], port: int) -> bool:
    """Whether fd is a TCP socket connected to the camera (not, say, an MQTT socket opened meanwhile)."""
    try:
        sock = socket.socket(fileno=fd)
    except (OSError, ValueError):
        return False
    try:
        if sock.type != socket.SOCK_STREAM:
            return False
        peer_host, peer_port = sock.getpeername()[:2]
    except OSError:
        return False
    finally:
        sock.detach()  # the fd stays FFmpeg's
    peer_host = str(peer_host).removeprefix("::ffff:")
    return int(peer_port) == port and (not addresses or peer_host in addresses)


def _shutdown(sockets: dict[int, str]) -> None:
    """Shut the stream's sockets down (not close: the fds stay FFmpeg's), so a blocked recv returns."""
    for fd, link in sockets.items():
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != link:
                continue  # FFmpeg closed it and the number now belongs to something else
            sock = socket.socket(fileno=fd)
        except (OSError, ValueError):
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()
