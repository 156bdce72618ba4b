"""The run id (issue 16 item 12): every result, event, status and stats message carries the run its seq counts in."""

from __future__ import annotations

import re

import numpy as np
import supervision as sv

from daemon import frames
from daemon.frames import Frame, Message, Result, begin_run, current_run


def frame(seq: int = 0) -> Frame:
    return Frame("cam1", seq, np.zeros((4, 4, 3), np.uint8), 1.7e9, 0.0)


def test_every_message_kind_carries_the_run_after_the_schema() -> None:
    result = Result(frame(), "p", sv.Detections.empty())
    for kind in ("result", "event"):
        payload = Message(kind, "cam1", {"schema": 1, "seq": 0}, result).payload
        assert list(payload)[:3] == ["schema", "run", "seq"] and payload["run"] == result.frame.run
    for kind in ("status", "stats"):
        assert Message(kind, None, {"state": "ok"}).payload["run"] == current_run()
    assert "run" not in Message("control", "cam1", {"camera": "cam1"}).payload  # Home Assistant's own schema


def test_a_frame_keeps_its_run_across_begin_run() -> None:
    old = frame(41)
    first = current_run()
    second = begin_run()
    assert second != first and current_run() == second and frames.current_run() == second
    assert old.run == first and frame(0).run == second  # the restarted source's seq 0 is in the new run
    assert Message("result", "cam1", {"schema": 1}, Result(old, "p", sv.Detections.empty())).payload["run"] == first


def test_run_ids_are_sortable_by_time_and_random() -> None:
    ids = {frames.new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run) for run in ids)


def test_a_replayed_payload_keeps_its_own_run() -> None:
    assert Message("result", "cam1", {"schema": 1, "run": "earlier"}).payload["run"] == "earlier"
