"""SIGHUP with a hostile config file, against the real daemon process (issue 16 item 1).

Before the bounded loader: invalid UTF-8 and a recursive alias ended the process with a traceback, a "billion
laughs" file made RSS climb ~30 MB/s with SIGTERM no longer stopping it, and a FIFO as a ${file:} secret hung
it. Now each is one ERROR line, the old pipeline keeps producing, and SIGTERM still ends the run in order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_yamlsrc import BILLION_LAUGHS
from tests.fixtures.daemon_proc import DaemonProcess, read_jsonl, report, wait_until
from tests.integration.test_faults import daemon_config, street

pytestmark = pytest.mark.integration

HOSTILE = [
    ("invalid UTF-8", lambda good: b"# Kamera Stra\xdfe\n" + good, "not valid UTF-8 at byte offset 13"),
    ("recursive alias", lambda good: b"pipeline: &s {name: x, detector: det, stages: [{model: det, stages: *s}]}\n",
     "recursive alias"),
    ("billion laughs", lambda good: BILLION_LAUGHS.encode(), "values, aliases expanded"),
    ("5000-deep nesting", lambda good: b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 48 levels"),
    # a secret that is a FIFO with no writer: open() alone would block the reload (the main thread) forever
    ("FIFO secret", lambda good: good + b"x_secret: ${file:fifo}\n", "must be a regular file, not a FIFO"),
]


@pytest.fixture
def proc(tmp_path: Path, models_dir: Path, media_dir: Path) -> Iterator[DaemonProcess]:
    out = tmp_path / "out.jsonl"
    config = daemon_config(models_dir, [street(media_dir)],
                           [{"id": "jsonl", "type": "jsonl", "path": str(out), "kinds": ["result"], "flush": "every"}])
    made = DaemonProcess(tmp_path / "daemon", config)
    yield made
    made.close()


def test_hostile_reloads_keep_the_daemon_running_and_sigterm_stops_it(proc: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = proc.config_path.read_bytes()
    os.mkfifo(proc.config_path.parent / "fifo")
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len(read_jsonl(out)) >= 3, 60, "first results", proc)
    for name, make, words in HOSTILE:
        proc.config_path.write_bytes(make(good))
        offset = len(proc.log_text())
        proc.send_signal(signal.SIGHUP)
        proc.wait_for_log("reload rejected", after=offset, timeout=30)
        rejection = [line for line in proc.log_text()[offset:].splitlines() if "reload rejected" in line]
        assert len(rejection) == 1 and words in rejection[0] and "ERROR" in rejection[0], (name, rejection)
        assert "Traceback" not in proc.log_text()[offset:], name
        produced = len(read_jsonl(out))
        wait_until(lambda n=produced: len(read_jsonl(out)) >= n + 3, 60, f"results after the {name} reload", proc)
        assert proc.alive, name
    proc.config_path.write_bytes(good)
    assert proc.terminate(timeout=30) == 0
    report("hostile_reloads", cases=[name for name, _, _ in HOSTILE], daemon_kept_running=True, sigterm_rc=0)
