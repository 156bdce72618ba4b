"""JSON Lines sink: one JSON object per line, one file per source if asked, size rotation, flush policies.

Each line is the message payload with a leading "kind" field ("result", "status", "event" or "stats"), so
every file has one line format whatever the sink's `kinds`, and `jq 'select(.kind == "result")'` filters it.
Files are appended to (a restart continues the same file). Messages without a source (stats) go to the
file whose {source_id} is "_daemon".
"""

from __future__ import annotations

import logging
import os
import string
import time
from pathlib import Path
from typing import IO, ClassVar, Literal

from pydantic import Field, field_validator

from daemon.frames import Message
from daemon.sinks.base import Sink, SinkContext, SinkOptions
from daemon.sinks.encode import to_json

log = logging.getLogger(__name__)

FlushMode = Literal["every", "interval", "close"]
PLACEHOLDERS = frozenset({"source_id", "pipeline"})
NO_SOURCE = "_daemon"  # the {source_id} of messages that concern no source (stats)


class JsonlOptions(SinkOptions):
    path: str = Field(
        ...,
        description="File to append to; may contain {source_id} and {pipeline} (e.g. "
        "out/{pipeline}/{source_id}.jsonl for one file per source). Parent folders are created.",
    )
    rotate_bytes: int | None = Field(
        None,
        ge=1,
        description="Rotate before a line would take the file past this size: name.jsonl becomes "
        "name.1.jsonl, name.1.jsonl becomes name.2.jsonl, ...; unset: never rotate.",
    )
    keep: int = Field(5, ge=1, description="Rotated files kept per output file (name.1 ... name.<keep>).")
    flush: FlushMode = Field(
        "interval",
        description="When lines reach the OS: every (each line), interval (every flush_interval_s), or "
        "close (only when the write buffer fills and at close).",
    )
    flush_interval_s: float = Field(1.0, gt=0, description="Flush period in seconds for flush: interval.")
    fsync: bool = Field(False, description="fsync after each flush so lines survive a power cut (slower).")

    @field_validator("path")
    @classmethod
    def _known_placeholders(cls, path: str) -> str:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(path) if name is not None]
        except ValueError as exc:
            raise ValueError(f"path {path!r}: bad placeholder syntax ({exc})") from exc
        for name, spec, conv in fields:
            if name not in PLACEHOLDERS or spec or conv:
                raise ValueError(
                    f"path {path!r}: unknown placeholder {{{name}}}; expected only {{source_id}} and {{pipeline}}"
                )
        return path


class JsonlWriteError(OSError):
    """A JSONL file that cannot be created, written or rotated; the message names the path."""


def rotated_path(path: Path, index: int) -> Path:
    """name.jsonl -> name.<index>.jsonl (name -> name.<index> when there is no suffix)."""
    if path.suffix:
        return path.with_name(f"{path.stem}.{index}{path.suffix}")
    return path.with_name(f"{path.name}.{index}")


class _OutFile:
    """One open output file with its size, for rotation."""

    def __init__(self, path: Path, sink_id: str) -> None:
        self.path = path
        self.sink_id = sink_id
        self.dirty = False
        self._fh = self._open()
        self.size = self._fh.tell()

    def _open(self) -> IO[bytes]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "ab")  # kept open for the sink's lifetime; closed in close()
        except OSError as exc:
            raise self._error("cannot open", exc) from exc

    def _error(self, what: str, exc: OSError) -> JsonlWriteError:
        return JsonlWriteError(f"jsonl sink {self.sink_id}: {what} {self.path}: {exc.strerror or exc}")

    def write(self, line: bytes, rotate_bytes: int | None, keep: int) -> None:
        if rotate_bytes is not None and self.size > 0 and self.size + len(line) > rotate_bytes:
            self.rotate(keep)
        try:
            self._fh.write(line)
        except OSError as exc:
            raise self._error("cannot write", exc) from exc
        self.size += len(line)
        self.dirty = True

    def rotate(self, keep: int) -> None:
        self._fh.close()
        try:
            for index in range(keep - 1, 0, -1):
                older = rotated_path(self.path, index)
                if older.exists():
                    os.replace(older, rotated_path(self.path, index + 1))  # replaces (drops) the oldest
            os.replace(self.path, rotated_path(self.path, 1))
        except OSError as exc:
            raise self._error("cannot rotate", exc) from exc
        finally:
            self._fh = self._open()
        self.size = 0
        log.debug("jsonl sink %s: rotated %s", self.sink_id, self.path)

    def flush(self, fsync: bool) -> None:
        if not self.dirty:
            return
        try:
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            raise self._error("cannot flush", exc) from exc
        self.dirty = False

    def close(self, fsync: bool) -> None:
        try:
            self.flush(fsync)
        finally:
            self._fh.close()


class JsonlSink(Sink):
    """Appends one JSON line per message to a file (or one file per source)."""

    Options: ClassVar[type[SinkOptions]] = JsonlOptions

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        if not isinstance(options, JsonlOptions):
            raise TypeError(f"JsonlSink needs JsonlOptions, got {type(options).__name__}")
        super().__init__(options, context)
        self.opts = options
        self._files: dict[Path, _OutFile] = {}
        self._last_flush = time.monotonic()

    def path_for(self, source_id: str | None) -> Path:
        return Path(self.opts.path.format(source_id=source_id or NO_SOURCE, pipeline=self.context.pipeline))

    def start(self) -> None:
        """Open every file known up front, so a path that cannot be written fails here, by name."""
        per_source = "{source_id}" in self.opts.path
        for source_id in self.context.source_ids if per_source else (None,):
            self._file(self.path_for(source_id))
        self._last_flush = time.monotonic()

    def _file(self, path: Path) -> _OutFile:
        out = self._files.get(path)
        if out is None:
            out = self._files[path] = _OutFile(path, self.opts.id)
        return out

    def publish(self, msg: Message) -> None:
        if "kind" in msg.payload and msg.payload["kind"] != msg.kind:
            raise ValueError(f"{msg.kind} payload has its own 'kind' field ({msg.payload['kind']!r}): would clash")
        line = (to_json({"kind": msg.kind, **msg.payload}) + "\n").encode("utf-8")
        out = self._file(self.path_for(msg.source_id))
        out.write(line, self.opts.rotate_bytes, self.opts.keep)
        if self.opts.flush == "every":
            out.flush(self.opts.fsync)
        elif self.opts.flush == "interval":
            self.flush()

    def flush(self) -> None:
        """Called by the fan-out about once a second; honours flush_interval_s (and never for close mode)."""
        if self.opts.flush != "interval" or time.monotonic() - self._last_flush < self.opts.flush_interval_s:
            return
        self._flush_all()

    def _flush_all(self) -> None:
        for out in self._files.values():
            out.flush(self.opts.fsync)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        errors: list[JsonlWriteError] = []
        for out in self._files.values():
            try:
                out.close(self.opts.fsync)
            except JsonlWriteError as exc:  # close the other files anyway, then report the first failure
                errors.append(exc)
        self._files.clear()
        if errors:
            raise errors[0]
