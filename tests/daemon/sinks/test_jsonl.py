"""JSONL sink: line format, per-source placeholders, size rotation, flush modes, clear path errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.frames import Message, current_run
from daemon.sinks.base import SinkContext
from daemon.sinks.jsonl import JsonlOptions, JsonlSink, JsonlWriteError, rotated_path

CONTEXT = SinkContext(pipeline="plates", source_ids=("cam1", "cam2"), state_dir="/tmp")


def make_sink(path: Path | str, **options: Any) -> JsonlSink:
    return JsonlSink(JsonlOptions.model_validate({"id": "file", "type": "jsonl", "path": str(path), **options}),
                     CONTEXT)


def lines(path: Path) -> list[dict[str, Any]]:
    """Each line, without the run id that daemon/frames.py adds to every result, event, status and stats message."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(row.pop("run") == current_run() for row in rows)
    return rows


def test_one_json_object_per_line_with_its_kind(tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "out.jsonl", flush="every")
    sink.start()
    sink.publish(Message("result", "cam1", {"seq": 7, "text": "ÄB 123", "detections": []}))
    sink.publish(Message("status", "cam1", {"state": "streaming"}))
    sink.publish(Message("stats", None, {"fps": 9.5}))
    sink.close()
    assert lines(tmp_path / "out.jsonl") == [
        {"kind": "result", "seq": 7, "text": "ÄB 123", "detections": []},
        {"kind": "status", "state": "streaming"},
        {"kind": "stats", "fps": 9.5},
    ]
    assert '"text":"ÄB 123"' in (tmp_path / "out.jsonl").read_text(encoding="utf-8")  # compact, real UTF-8


@pytest.mark.parametrize(
    ("template", "source_id", "expected"),
    [
        ("out/{source_id}.jsonl", "cam1", "out/cam1.jsonl"),
        ("out/{source_id}.jsonl", "cam2", "out/cam2.jsonl"),
        ("out/{source_id}.jsonl", None, "out/_daemon.jsonl"),
        ("{pipeline}/{source_id}/log.jsonl", "cam2", "plates/cam2/log.jsonl"),
        ("{pipeline}.jsonl", "cam1", "plates.jsonl"),
        ("all.jsonl", None, "all.jsonl"),
    ],
)
def test_placeholders_pick_the_file(tmp_path: Path, template: str, source_id: str | None, expected: str) -> None:
    sink = make_sink(tmp_path / template, flush="every")
    sink.start()
    kind = "stats" if source_id is None else "result"
    sink.publish(Message(kind, source_id, {"n": 1}))
    sink.close()
    assert lines(tmp_path / expected) == [{"kind": kind, "n": 1}]


def test_start_creates_one_file_per_known_source(tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "{pipeline}" / "{source_id}.jsonl")
    sink.start()
    sink.close()
    assert sorted(p.name for p in (tmp_path / "plates").iterdir()) == ["cam1.jsonl", "cam2.jsonl"]


@pytest.mark.parametrize("template", ["{camera}.jsonl", "{source_id!r}.jsonl", "{source_id:>8}.jsonl", "{.jsonl"])
def test_unknown_or_odd_placeholders_are_rejected(template: str) -> None:
    with pytest.raises(ValidationError, match="path"):
        JsonlOptions.model_validate({"id": "f", "type": "jsonl", "path": template})


def test_rotates_by_size_and_keeps_only_keep_files(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = make_sink(path, rotate_bytes=200, keep=2, flush="every")
    sink.start()
    for seq in range(60):
        sink.publish(Message("result", "cam1", {"seq": seq}))
    sink.close()
    kept = [rotated_path(path, 2), rotated_path(path, 1), path]  # oldest first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.1.jsonl", "out.2.jsonl", "out.jsonl"]
    assert all(0 < p.stat().st_size <= 200 for p in kept)
    seqs = [record["seq"] for p in kept for record in lines(p)]
    assert seqs == list(range(seqs[0], 60))  # contiguous, newest last, older files dropped
    assert seqs[0] > 0


@pytest.mark.parametrize(
    ("path", "index", "expected"),
    [("a/out.jsonl", 1, "a/out.1.jsonl"), ("a/out.v2.jsonl", 3, "a/out.v2.3.jsonl"), ("a/out", 2, "a/out.2")],
)
def test_rotated_names(path: str, index: int, expected: str) -> None:
    assert rotated_path(Path(path), index) == Path(expected)


def test_a_line_bigger_than_rotate_bytes_still_gets_written(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = make_sink(path, rotate_bytes=10, flush="every")
    sink.start()
    sink.publish(Message("result", "cam1", {"seq": 1, "pad": "x" * 50}))
    sink.publish(Message("result", "cam1", {"seq": 2, "pad": "x" * 50}))
    sink.close()
    assert [r["seq"] for r in lines(rotated_path(path, 1))] == [1]
    assert [r["seq"] for r in lines(path)] == [2]


@pytest.mark.parametrize(
    ("mode", "interval_s", "fsync", "after_publish", "after_periodic_flush"),
    [
        ("every", 1.0, False, 1, 1),
        ("every", 1.0, True, 1, 1),
        ("interval", 3600.0, False, 0, 0),  # interval not reached: the periodic flush() leaves it buffered
        ("interval", 0.02, True, None, 1),  # interval reached: the periodic flush() writes it out
        ("close", 0.02, False, 0, 0),
    ],
)
def test_flush_modes(
    tmp_path: Path, mode: str, interval_s: float, fsync: bool, after_publish: int | None, after_periodic_flush: int
) -> None:
    path = tmp_path / "out.jsonl"
    sink = make_sink(path, flush=mode, flush_interval_s=interval_s, fsync=fsync)
    sink.start()
    sink.publish(Message("result", "cam1", {"seq": 1}))
    if after_publish is not None:  # (with a tiny interval, whether publish itself flushed depends on timing)
        assert len(path.read_bytes().splitlines()) == after_publish
    time.sleep(0.05)
    sink.flush()  # what the fan-out calls about once a second
    assert len(path.read_bytes().splitlines()) == after_periodic_flush
    sink.close()
    assert lines(path) == [{"kind": "result", "seq": 1}]


def test_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    for seq in (1, 2):
        sink = make_sink(path)
        sink.start()
        sink.publish(Message("result", "cam1", {"seq": seq}))
        sink.close()
    assert [r["seq"] for r in lines(path)] == [1, 2]


def test_unwritable_path_fails_at_start_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    sink = make_sink(blocker / "{source_id}.jsonl")
    with pytest.raises(JsonlWriteError, match=r"cannot open .*not-a-folder/cam1\.jsonl"):
        sink.start()


def test_payload_with_its_own_kind_field_is_refused(tmp_path: Path) -> None:
    sink = make_sink(tmp_path / "out.jsonl")
    sink.start()
    with pytest.raises(ValueError, match="'kind' field"):
        sink.publish(Message("event", "cam1", {"kind": "enter"}))
    sink.close()
