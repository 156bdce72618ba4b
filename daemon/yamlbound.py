"""Bounded reading and parsing of config YAML: size, encoding, nesting depth and alias expansion are checked
while the node graph is composed, before anything is expanded, so a hostile file costs at most LIMITS.

PyYAML's composer shares the node an alias points at instead of copying it, so composing a "billion laughs"
file is cheap; only walking the graph (building Python data) expands it. The composer below weighs every node
(its expanded size and height) as it finishes, so an alias is priced at what it would expand to.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Limits:
    """What one config file may cost; README "Hostile configs" quotes these."""

    file_bytes: int = 128 * 1024  # a large real config is ~20 KB; pure-Python parsing: ~1 s at the limit
    secret_bytes: int = 64 * 1024  # one ${file:...} / ${cred:...} value
    depth: int = 48  # nesting of mappings and lists, aliases included (real configs: ~10)
    nodes: int = 25_000  # values after expanding every alias (real configs: a few thousand)
    string_chars: int = 64 * 1024  # one string value after ${...} substitution
    number_abs: float = 1e12  # |number|; inf and nan are refused too


LIMITS = Limits()


class BoundError(ValueError):
    """A file or document over one of the limits; str() names the file (and line) and the limit."""


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FIFOs, devices and folders are refused unread.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BoundError(f"{path}: {what} must be a regular file, not {_file_kind(mode)}.")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BoundError(f"{path}: {what} is larger than {limit} bytes; refused.")
    return data


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def decode_utf8(data: bytes, path: Path) -> str:
    """UTF-8 text, or one line naming the byte offset and line of the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BoundError(
            f"{path} (line {line}): not valid UTF-8 at byte offset {exc.start} (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8.") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses a document deeper or (aliases expanded) larger than the limits."""

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self._open: list[list[int]] = []  # per node being composed: [expanded size so far, height of children]
        self._weight: dict[int, tuple[int, int]] = {}  # id(finished node) -> (expanded size, height)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)  # raises for an undefined alias
            weight = self._weight.get(id(node))
            if weight is None:  # its anchor's node is still open: the alias is inside what it names
                raise _bound_error(f"alias *{event.anchor} is inside the node it refers to (a recursive alias)",
                                   event.start_mark)
            self._add(weight, event.start_mark)
            return node
        mark = self.peek_event().start_mark
        if len(self._open) >= self.limits.depth:
            raise _bound_error(f"nested deeper than {self.limits.depth} levels", mark)
        self._open.append([1, 0])
        node = super().compose_node(parent, index)
        size, height = self._open.pop()
        self._weight[id(node)] = (size, height + 1)  # nodes stay referenced by the tree: ids stay unique
        self._add((size, height + 1), mark)
        return node

    def _add(self, weight: tuple[int, int], mark: yaml.Mark) -> None:
        size, height = weight
        if len(self._open) + height > self.limits.depth:
            raise _bound_error(f"nested deeper than {self.limits.depth} levels once aliases are expanded", mark)
        if not self._open:
            return
        parent = self._open[-1]
        parent[0] += size
        parent[1] = max(parent[1], height)
        if parent[0] > self.limits.nodes:  # each ancestor is at least as large: checking the innermost suffices
            raise _bound_error(f"more than {self.limits.nodes} values, aliases expanded", mark)


class _LimitExceeded(yaml.MarkedYAMLError):
    """Raised inside the composer so the caller's YAML error path reports it with its line."""


def _bound_error(problem: str, mark: yaml.Mark) -> _LimitExceeded:
    return _LimitExceeded(problem=problem, problem_mark=mark)


def compose_bounded(text: str, path: Path, limits: Limits = LIMITS) -> tuple[yaml.Node | None, _BoundedLoader]:
    """The document's node graph (None for an empty file) and the loader, whose constructor builds scalars."""
    loader = _BoundedLoader(text, limits)
    try:
        return loader.get_single_node(), loader
    except _LimitExceeded as exc:
        raise BoundError(f"{path}{_where(exc)}: {exc.problem}; refused.") from None
    except yaml.YAMLError as exc:
        raise BoundError(f"{path}{_where(exc)}: not valid YAML: {_problem(exc)}.") from None
    finally:
        loader.dispose()


def _where(exc: yaml.YAMLError) -> str:
    mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    return (exc.problem if isinstance(exc, yaml.MarkedYAMLError) else None) or str(exc)


def check_scalar(value: object, limits: Limits = LIMITS) -> str | None:
    """Why a scalar value is refused (non-finite or huge number, over-long string), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value != value:
        return "nan is not accepted as a number"
    if isinstance(value, int | float) and abs(value) > limits.number_abs:
        return f"numbers must be within ±{limits.number_abs:g} (inf is not accepted), got {value:g}"
    if isinstance(value, str) and len(value) > limits.string_chars:
        return f"a string of {len(value)} characters; at most {limits.string_chars} are accepted"
    return None
