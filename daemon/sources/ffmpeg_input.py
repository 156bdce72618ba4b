"""Keep a URL's password out of ffmpeg's and ffprobe's command line, where `ps` shows it to every local user.

FFmpeg has no option for RTSP (or RTMP, HTTP) credentials other than the URL, and no way to read a URL from
stdin or the environment. Its concat demuxer does read URLs from a file, with per-input options: so an input
that carries a password is written as a one-entry ffconcat file, mode 0600 in a private 0700 folder, and ffmpeg
is given `-f concat -safe 0 -i <that file>`. Options that belong to the stream's own demuxer or protocol
(-rtsp_transport and the like) cannot be given to the concat demuxer on the command line; they go into the
file as `option` lines. The folder is removed when the source closes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from urllib.parse import urlsplit

# private options of the stream's demuxer or protocol (rtsp, rtp, tcp, udp, http): ffmpeg refuses them on
# the concat input ("Option rtsp_transport not found"), so they move into the file with the URL
STREAM_OPTIONS = frozenset(
    {
        "rtsp_transport",
        "rtsp_flags",
        "allowed_media_types",
        "min_port",
        "max_port",
        "listen_timeout",
        "timeout",
        "stimeout",
        "reorder_queue_size",
        "buffer_size",
        "user_agent",
        "pkt_size",
        "localaddr",
        "headers",
        "reconnect",
        "reconnect_streamed",
        "reconnect_delay_max",
        "rtmp_live",
        "rtmp_buffer",
    }
)
# protocols the concat demuxer may open for the one URL (ffmpeg refuses any protocol not listed)
PROTOCOLS = "file,crypto,data,tcp,udp,rtp,srtp,rtsp,rtsps,tls,http,https,httpproxy,rtmp,rtmps,rtmpt,rtmpts,hls"


def has_password(url: str) -> bool:
    """Whether the input is a URL with a password in its userinfo (a plain path or URL goes on argv as is)."""
    if "://" not in url:
        return False
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def split_stream_options(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(arguments that stay on the command line, (name, value) pairs for the stream itself)."""
    outer: list[str] = []
    inner: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        name = args[i][1:] if args[i].startswith("-") else ""
        if name in STREAM_OPTIONS and i + 1 < len(args):
            inner.append((name, args[i + 1]))
            i += 2
            continue
        outer.append(args[i])
        i += 1
    return outer, inner


def _quoted(value: str) -> str:
    # ffconcat reads tokens with av_get_token: single quotes, and '\'' for a quote inside
    return "'" + value.replace("'", "'\\''") + "'"


class InputFile:
    """A one-entry ffconcat file holding the URL (and the stream's options), readable only by this user."""

    def __init__(self, url: str, options: list[tuple[str, str]]) -> None:
        if any(c in url for c in "\r\n\0"):
            raise ValueError("the input URL contains a line break or NUL")
        self.folder = tempfile.mkdtemp(prefix="edgewatch-ffmpeg-")  # 0700
        self.path = os.path.join(self.folder, "input.ffconcat")
        lines = ["ffconcat version 1.0", f"file {_quoted(url)}"]
        lines += [f"option {name} {_quoted(value)}" for name, value in options]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")

    def input_args(self) -> list[str]:
        """What replaces `-i URL` on ffmpeg's and ffprobe's command line."""
        return ["-f", "concat", "-safe", "0", "-protocol_whitelist", PROTOCOLS, "-i", self.path]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
