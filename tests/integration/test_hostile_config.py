"""SIGHUP with a hostile config file, then restarts, against the real daemon process (issue 16 items 1 and 12).

Before the bounded loader: invalid UTF-8 and a recursive alias ended the process with a traceback, a "billion
laughs" file made RSS climb ~30 MB/s with SIGTERM no longer stopping it, and a FIFO as a ${file:} secret hung
it. Now each is one ERROR line, the old pipeline keeps producing, and SIGTERM still ends the run in order.

The same process then checks the run id: seq starts at 0 again after a reload that restarts a source and after
a restart, and each of those starts a new run, so (run, source_id, seq) never repeats. Before, a consumer that
deduplicated on (source_id, seq) dropped the new run's results. (One daemon for both: each start costs seconds.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    config = daemon_config(models_dir, [street(media_dir)], [{"id": "jsonl", "type": "jsonl", "path": str(out),
                                                              "flush": "every"}])
    made = DaemonProcess(tmp_path / "daemon", config)
    yield made
    made.close()


def results(path: Path) -> list[dict[str, Any]]:
    return [row for row in read_jsonl(path) if row["kind"] == "result"]


def test_hostile_reloads_keep_the_daemon_running_and_sigterm_stops_it(proc: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = proc.config_path.read_bytes()
    os.mkfifo(proc.config_path.parent / "fifo")
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len(results(out)) >= 3, 60, "first results", proc)
    for name, make, words in HOSTILE:
        proc.config_path.write_bytes(make(good))
        offset = len(proc.log_text())
        proc.send_signal(signal.SIGHUP)
        proc.wait_for_log("reload rejected", after=offset, timeout=30)
        rejection = [line for line in proc.log_text()[offset:].splitlines() if "reload rejected" in line]
        assert len(rejection) == 1 and words in rejection[0] and "ERROR" in rejection[0], (name, rejection)
        assert "Traceback" not in proc.log_text()[offset:], name
        produced = len(results(out))
        wait_until(lambda n=produced: len(results(out)) >= n + 3, 60, f"results after the {name} reload", proc)
        assert proc.alive, name
    report("hostile_reloads", cases=[name for name, _, _ in HOSTILE], daemon_kept_running=True)
    assert len({row["run"] for row in results(out)}) == 1  # a rejected reload changes nothing
    check_runs_across_a_source_reload_and_a_restart(proc, out)


def check_runs_across_a_source_reload_and_a_restart(proc: DaemonProcess, out: Path) -> None:
    changed = {**proc.config, "sources": [{**proc.config["sources"][0], "fps": 4.0}]}  # restarts the source
    proc.config_path.write_text(yaml.safe_dump(changed, sort_keys=False), encoding="utf-8")
    offset = len(proc.log_text())
    proc.send_signal(signal.SIGHUP)
    proc.wait_for_log("source street started", after=offset)
    wait_until(lambda: len({row["run"] for row in results(out)}) == 2, 60, "results of the reloaded source", proc)
    assert proc.terminate(timeout=30) == 0
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len({row["run"] for row in results(out)}) == 3, 60, "second start's results", proc)
    assert proc.terminate(timeout=30) == 0
    rows = read_jsonl(out)
    keys = [(row["run"], row["source_id"], row["seq"]) for row in rows if row["kind"] == "result"]
    assert len(keys) == len(set(keys))
    runs = list(dict.fromkeys(run for run, _, _ in keys))
    assert len(runs) == 3 and all(min(seq for r, _, seq in keys if r == run) == 0 for run in runs)
    assert all("run" in row for row in rows if row["kind"] in ("result", "status", "event", "stats"))
    assert any(row["kind"] == "status" for row in rows)
