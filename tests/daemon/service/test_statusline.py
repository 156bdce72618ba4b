"""The live status line: only on a terminal, fps-cap skips apart from real drops, log lines on their own line."""

from __future__ import annotations

import io
import logging

import pytest

from daemon.__main__ import setup_logging
from daemon.service.stats import Stats
from daemon.service.statusline import CLEAR_LINE, StatusLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def stats_with_drops() -> Stats:
    stats = Stats()
    source = stats.source("cam")
    source.dropped["fps_cap"] += 7
    source.dropped["queue_full"] += 2
    source.dropped["stale"] += 1
    return stats


def test_drop_counts_real_drops_and_skip_the_fps_cap() -> None:
    line = StatusLine(stats_with_drops(), {}, io.StringIO()).render(0.0)
    assert "drop=3 skip=7" in line


def test_nothing_is_printed_when_not_a_terminal() -> None:
    out = io.StringIO()
    StatusLine(stats_with_drops(), {}, out).maybe_print(0.0)
    assert out.getvalue() == ""


def test_a_terminal_gets_one_rewritten_line() -> None:
    out = Terminal()
    status = StatusLine(stats_with_drops(), {}, out)
    status.maybe_print(0.0)
    assert out.getvalue().startswith(CLEAR_LINE) and "\n" not in out.getvalue()
    status.end()
    assert out.getvalue().endswith("\n")


def test_a_log_line_on_a_terminal_clears_the_status_line_first(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    setup_logging("info")
    terminal.write(CLEAR_LINE + "cam streaming 10.0fps")  # the status line, no newline
    logging.getLogger("daemon.test").info("source %s: connected", "cam")
    text = terminal.getvalue()
    assert text.endswith("source cam: connected\n")
    assert "10.0fps" + CLEAR_LINE in text  # the log line starts on a cleared line, not after the status
