"""(run, source_id, seq) is unique forever (issue 16 item 12): seq starts at 0 again after a restart and after a
reload that restarts a source, and each of those starts a new run id. Before, a consumer deduplicating on
(source_id, seq) dropped the new run's results."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.daemon_proc import DaemonProcess, read_jsonl, wait_until
from tests.integration.test_faults import daemon_config, street

pytestmark = pytest.mark.integration


@pytest.fixture
def proc(tmp_path: Path, models_dir: Path, media_dir: Path) -> Iterator[DaemonProcess]:
    config = daemon_config(models_dir, [street(media_dir)],
                           [{"id": "jsonl", "type": "jsonl", "path": str(tmp_path / "out.jsonl"), "flush": "every"}])
    made = DaemonProcess(tmp_path / "daemon", config)
    yield made
    made.close()


def results(path: Path) -> list[dict[str, object]]:
    return [row for row in read_jsonl(path) if row["kind"] == "result"]


def test_restarts_and_source_reloads_start_a_new_run(proc: DaemonProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len(results(out)) >= 3, 60, "first run's results", proc)
    changed = {**proc.config, "sources": [{**proc.config["sources"][0], "fps": 4.0}]}  # restarts the source
    proc.config_path.write_text(yaml.safe_dump(changed, sort_keys=False), encoding="utf-8")
    offset = len(proc.log_text())
    proc.send_signal(signal.SIGHUP)
    proc.wait_for_log("source street started", after=offset)
    wait_until(lambda: len({row["run"] for row in results(out)}) == 2, 60, "results of the reloaded source", proc)
    assert proc.terminate() == 0
    proc.start().wait_for_log("edgewatch running")
    wait_until(lambda: len({row["run"] for row in results(out)}) == 3, 60, "second start's results", proc)
    assert proc.terminate() == 0
    rows = read_jsonl(out)
    keys = [(row["run"], row["source_id"], row["seq"]) for row in rows if row["kind"] == "result"]
    assert len(keys) == len(set(keys))
    runs = list(dict.fromkeys(run for run, _, _ in keys))  # in order of appearance
    assert len(runs) == 3
    for run in runs:  # every run counts its own seq from 0
        assert min(seq for r, _, seq in keys if r == run) == 0  # type: ignore[type-var]
    assert {row["kind"] for row in rows if "run" in row} >= {"result", "status"}
    assert all("run" in row for row in rows if row["kind"] in ("result", "status", "event", "stats"))
