"""FfmpegSource: an ffmpeg child process decoding any input (hardware decoders too) to raw BGR on a pipe."""

from __future__ import annotations

import collections
import io
import json
import logging
import subprocess
import threading
from typing import IO, ClassVar, cast

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from daemon.sources.base import Source, SourceClosed, SourceError, SourceOptions, mask_credentials
from daemon.sources.ffmpeg_input import InputFile, has_password, split_stream_options
from pipelines.preprocess import Image

log = logging.getLogger(__name__)

STDERR_LINES = 40  # the last lines of ffmpeg's stderr kept for error messages


class FfmpegOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors must not echo the URL

    input: str = Field(
        ..., repr=False, description="Input URL or path for ffmpeg -i; credentials are never logged, and a URL "
        "with a password reaches ffmpeg through a private file, not its command line (daemon/sources/ffmpeg_input.py).",
    )
    input_args: list[str] = Field(
        default_factory=list,
        description='Options before -i, e.g. ["-hwaccel", "cuda", "-c:v", "h264_cuvid"] or ["-rtsp_transport", "tcp"].',
    )
    width: int | None = Field(None, gt=0, description="Scale frames to this width (with height); unset: probe.")
    height: int | None = Field(None, gt=0, description="Scale frames to this height (with width); unset: probe.")
    realtime: bool = Field(False, description="Read the input at its native rate (-re), e.g. to replay a file.")
    extra_args: list[str] = Field(
        default_factory=list,
        description="Output options before the pipe (e.g. ['-r', '10']); set width/height if they change the size.",
    )
    probe_args: list[str] = Field(
        default_factory=list,
        description="ffprobe input options used to find the size, e.g. ['-rtsp_transport', 'tcp'].",
    )
    finite: bool | None = Field(
        None,
        description="Whether the input ends (a file: the capture then reports ended); unset: true for paths, "
        "false for URLs, whose end is treated as a lost stream and reconnected.",
    )
    open_timeout_s: float = Field(15.0, gt=0, le=300, description="Limit on probing the input, in seconds.")
    stall_timeout_s: float | None = Field(
        10.0, gt=0, description="Restart ffmpeg when no frame arrived for this many seconds; unset: never."
    )
    ffmpeg: str = Field("ffmpeg", description="The ffmpeg executable.")
    ffprobe: str = Field("ffprobe", description="The ffprobe executable.")

    @model_validator(mode="after")
    def _check_size(self) -> FfmpegOptions:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither (the size is then probed)")
        return self

    @property
    def is_finite(self) -> bool:
        return self.finite if self.finite is not None else ("://" not in self.input or self.input.startswith("file:"))


class FfmpegSource(Source):
    """Frames as exact-size bgr24 reads from ffmpeg's stdout; close() kills ffmpeg, which ends a blocked read."""

    live: ClassVar[bool] = True
    Options: ClassVar[type[SourceOptions]] = FfmpegOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, FfmpegOptions)
        self.opts = options
        self.size_wh: tuple[int, int] | None = None
        self.fps: float | None = None  # from the probe; gives pts = index / fps
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._drain: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False
        self._index = 0
        self._input_file: InputFile | None = None  # while open, for an input with a password

    @property
    def safe_input(self) -> str:
        return mask_credentials(self.opts.input)

    def describe(self) -> str:
        return f"ffmpeg:{self.options.id} {self.safe_input}"

    @property
    def stall_timeout_s(self) -> float | None:
        return self.opts.stall_timeout_s

    @property
    def paced(self) -> bool:
        return self.opts.realtime or not self.opts.is_finite

    def _input(self, args: list[str]) -> list[str]:
        """`args -i INPUT`, or with a password in the URL, `args -f concat ... -i FILE` (the URL in the file)."""
        if self._input_file is None:
            return [*args, "-i", self.opts.input]
        return [*split_stream_options(args)[0], *self._input_file.input_args()]

    def command(self, size_wh: tuple[int, int]) -> list[str]:
        """ffmpeg's argument list (without a password in the URL it holds the input: never log it unmasked)."""
        scale = ["-vf", f"scale={size_wh[0]}:{size_wh[1]}"] if self.opts.width else []
        return [
            self.opts.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
            *self._input([*self.opts.input_args, *(["-re"] if self.opts.realtime else [])]),
            *scale, "-an", "-sn", "-dn", *self.opts.extra_args, "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1",
        ]

    def probe_command(self) -> list[str]:
        return [self.opts.ffprobe, "-v", "error", "-select_streams", "v:0",
                "-show_entries", "stream=width,height,avg_frame_rate,r_frame_rate:stream_side_data=rotation",
                "-of", "json", *self._input(self.opts.probe_args)]

    def _write_input_file(self) -> None:
        """An input with a password goes to ffmpeg in a private file; its stream options go with it."""
        self._remove_input_file()
        if has_password(self.opts.input):
            # one file serves ffprobe and ffmpeg: the stream options of both (input_args win)
            pairs = split_stream_options(self.opts.probe_args)[1] + split_stream_options(self.opts.input_args)[1]
            stream_options = list(dict(pairs).items())
            try:
                self._input_file = InputFile(self.opts.input, stream_options)
            except (OSError, ValueError) as exc:
                raise SourceError(f"{self.describe()}: cannot hand the input to ffmpeg privately: {exc}") from None

    def _remove_input_file(self) -> None:
        if self._input_file is not None:
            self._input_file.remove()
            self._input_file = None

    def probe(self) -> tuple[tuple[int, int], float | None]:
        """(width, height) as ffmpeg will output them (rotation applied) and the frame rate, from ffprobe."""
        cmd = self.probe_command()
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=self.opts.open_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"{self.describe()}: ffprobe found no answer within {self.opts.open_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise SourceError(f"{self.describe()}: cannot run {self.opts.ffprobe}: {exc.strerror}") from None
        streams = json.loads(done.stdout or b"{}").get("streams") or []
        if done.returncode != 0 or not streams or not streams[0].get("width"):
            detail = mask_credentials(done.stderr.decode(errors="replace").strip()[-500:]) or "no video stream"
            raise SourceError(f"{self.describe()}: ffprobe cannot read the input: {detail}")
        stream = streams[0]
        width, height = int(stream["width"]), int(stream["height"])
        rotation = next((int(s.get("rotation", 0)) for s in stream.get("side_data_list", [])), 0)
        if abs(rotation) % 180 == 90:  # ffmpeg auto-rotates, so the frames come out transposed
            width, height = height, width
        return (width, height), _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))

    def open(self) -> None:
        self._write_input_file()
        try:
            proc = self._start_ffmpeg()
        except BaseException:
            self._remove_input_file()
            raise
        assert proc.stderr is not None
        self._drain = threading.Thread(target=self._drain_stderr, args=(proc.stderr,),
                                       name=f"ffmpeg-stderr-{self.options.id}", daemon=True)
        self._drain.start()
        with self._lock:
            self._proc, self._closed, self._index = proc, False, 0
        assert self.size_wh is not None
        log.info("source %s: ffmpeg reading %s at %dx%d", self.options.id, self.safe_input, *self.size_wh)

    def _start_ffmpeg(self) -> subprocess.Popen[bytes]:
        if self.opts.width is not None and self.opts.height is not None:
            self.size_wh, self.fps = (self.opts.width, self.opts.height), None
        else:
            self.size_wh, self.fps = self.probe()
        self._stderr.clear()
        try:
            return subprocess.Popen(self.command(self.size_wh), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=1 << 20)
        except OSError as exc:
            raise SourceError(f"{self.describe()}: cannot run {self.opts.ffmpeg}: {exc.strerror}") from None

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = mask_credentials(raw.decode(errors="replace").rstrip())
                if line:
                    self._stderr.append(line)
                    log.debug("source %s: ffmpeg: %s", self.options.id, line)

    def read(self) -> tuple[Image, float | None] | None:
        with self._lock:
            proc = self._proc
            if self._closed or proc is None or proc.stdout is None:
                raise SourceClosed(f"{self.describe()}: closed or not open")
            self._reading = True
        assert self.size_wh is not None
        width, height = self.size_wh
        buf = bytearray(width * height * 3)
        try:
            got = cast(io.BufferedReader, proc.stdout).readinto(buf)
        finally:
            with self._lock:
                self._reading = False
                closed = self._closed
        if closed:
            proc.stdout.close()  # close() came while we were reading and left the pipe to us
            raise SourceClosed(f"{self.describe()}: closed while reading")
        if got != len(buf):
            self._end(proc)
            return None
        pts = self._index / self.fps if self.fps else None
        self._index += 1
        return np.frombuffer(buf, np.uint8).reshape(height, width, 3), pts

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        """End of ffmpeg's output: returns at the end of a finite input, raises for an error to reconnect from."""
        try:
            code = proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        if proc.stdout is not None:
            proc.stdout.close()
        if self._drain is not None:
            self._drain.join(timeout=1.0)
        if code == 0 and self.opts.is_finite:
            log.info("source %s: ffmpeg reached the end of %s", self.options.id, self.safe_input)
            return
        tail = " | ".join(list(self._stderr)[-5:]) or "no message"
        raise SourceError(f"{self.describe()}: ffmpeg stopped (exit code {code}): {tail}")

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            if self._closed or proc is None:
                self._closed = True
                return
            self._closed = True
            reading = self._reading
            if proc.poll() is None:
                proc.kill()  # a read blocked on the pipe now gets end-of-file
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.warning("source %s: ffmpeg (pid %d) did not exit after SIGKILL", self.options.id, proc.pid)
        if not reading and proc.stdout is not None:
            proc.stdout.close()
        if self._drain is not None:
            self._drain.join(timeout=1.0)
        self._remove_input_file()


def _rate(text: object) -> float | None:
    """ffprobe's "num/den" rate as a float, None for "0/0" or missing."""
    num, _, den = str(text or "").partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None
